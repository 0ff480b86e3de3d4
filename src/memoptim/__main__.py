from memoptim.cli.main import main

raise SystemExit(main())
