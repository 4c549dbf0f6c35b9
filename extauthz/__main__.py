from extauthz.cli import main

raise SystemExit(main())
