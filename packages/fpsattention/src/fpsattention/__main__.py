from fpsattention.cli import main

raise SystemExit(main())
