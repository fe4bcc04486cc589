from mammofuse.cli import main

raise SystemExit(main())
