"""``python -m torghut.clickhouse [--print] [--dir DIR]``: apply (or print) the migrations."""

from torghut.clickhouse.migrations import main

raise SystemExit(main())
