"""The netns testbed: meshes of network namespaces on one machine (DESIGN.md, netns-testbed).

Modules by responsibility:
- ``topology``: read and validate a topology TOML file (pure).
- ``plan``: names, addresses, ports and per-node meshd configs derived from it (pure).
- ``rules``: the nftables rulesets and tc commands for the current impairments (pure).
- ``env``: state directory, testbed id and daemon command from the environment.
- ``state``: the state directory (state.json, lock).
- ``build``: create namespaces, links, bridges, rules (runs ``ip``, ``nft``, ``tc``).
- ``procs``: start and stop processes inside namespaces.
- ``lifecycle``: keys and configs, the internet's servers, daemons; tearing it all down.
- ``control``: ``status`` calls on the nodes' control sockets.
- ``converge``: what "converged" means, judged from each node's status (pure).
- ``cli``: one function per subcommand.
"""
