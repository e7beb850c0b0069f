from gifting.cli import main

raise SystemExit(main())
