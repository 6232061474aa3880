from nstestbed.cli import main

raise SystemExit(main())
