from gateway.worker.process import main

raise SystemExit(main())
