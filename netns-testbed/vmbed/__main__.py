from vmbed.cli import main

raise SystemExit(main())
