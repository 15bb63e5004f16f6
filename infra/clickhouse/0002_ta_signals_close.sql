-- The bar close the indicators were computed at (torghut.events.Signal.close; not in the design
-- DDL). Strategies price orders with it; the flat view exposes it as price/close.

ALTER TABLE {{db}}.ta_signals {{on_cluster}}
  ADD COLUMN IF NOT EXISTS close Nullable(Float64) AFTER vol_realized_w60s;
