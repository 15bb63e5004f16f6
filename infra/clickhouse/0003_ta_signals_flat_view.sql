-- Backward-compatible flat view for TRADING_SIGNAL_SCHEMA=flat consumers (torghut-design.md).
-- FINAL: replays and corrected bars are collapsed on read, like every other Torghut reader.

CREATE OR REPLACE VIEW {{db}}.ta_signals_flat {{on_cluster}} AS
SELECT
  event_ts AS ts,
  symbol,
  macd,
  macd_signal,
  macd_signal AS signal,
  rsi14 AS rsi,
  rsi14,
  ema12 AS ema,
  vwap_session AS vwap,
  toJSONString(CAST(
    (macd, macd_signal, macd_hist, ema12, ema26, rsi14, boll_mid, boll_upper, boll_lower,
     vwap_session, vwap_w5m, imbalance_spread, imbalance_bid_px, imbalance_ask_px,
     imbalance_bid_sz, imbalance_ask_sz, vol_realized_w60s, close),
    'Tuple(macd Nullable(Float64), macd_signal Nullable(Float64), macd_hist Nullable(Float64),
     ema12 Nullable(Float64), ema26 Nullable(Float64), rsi14 Nullable(Float64),
     boll_mid Nullable(Float64), boll_upper Nullable(Float64), boll_lower Nullable(Float64),
     vwap_session Nullable(Float64), vwap_w5m Nullable(Float64),
     imbalance_spread Nullable(Float64), imbalance_bid_px Nullable(Float64),
     imbalance_ask_px Nullable(Float64), imbalance_bid_sz Nullable(UInt64),
     imbalance_ask_sz Nullable(UInt64), vol_realized_w60s Nullable(Float64),
     close Nullable(Float64))'
  )) AS signal_json,
  window_size AS timeframe,
  close AS price,
  close,
  imbalance_spread AS spread
FROM {{db}}.ta_signals FINAL;
