from keep.cli import main

raise SystemExit(main())
