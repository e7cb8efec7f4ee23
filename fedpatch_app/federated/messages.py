"""The protocol in one place: what travels between the server and the clients.

A run is three exchanges, each one instruction (server -> clients) and one reply per
client; every instruction carries the run plan (`plan.Plan`):

| phase | message type | down | up | codec |
|---|---|---|---|---|
| train | TRAIN | plan | local coresets + counts | `codec_train` |
| score (evaluate A) | EVALUATE | plan + global banks (+ each row's source) | image scores, map ranges (+ source-check reports) | `codec_score`, `codec_source_check` |
| rescore (evaluate A again, only when `source-check-action = exclude` left rows out) | EVALUATE | plan + the banks merged again | as score, without source check | `codec_score` |
| stats (evaluate B) | QUERY | plan + map scalings | sufficient statistics | `codec_stats` |

No image, map or pickled object leaves a client. Every reply is checked before the
server uses it (`wire.InvalidReply` names what is wrong). This module gathers the names
the server and the client use, so `messages.X` reads as the protocol's vocabulary.
"""

from fedpatch_app.federated.codec_score import (
    CalibrationRange,
    CategoryScores,
    ScoreReply,
    decode_banks,
    decode_score_reply,
    encode_banks,
    encode_score_reply,
    query_clips,
)
from fedpatch_app.federated.codec_stats import (
    StatsReply,
    decode_stats_reply,
    encode_stats_reply,
    exclusion_config,
    read_exclusions,
    read_scalings,
    scaling_config,
)
from fedpatch_app.federated.codec_train import (
    DP_FLOAT_KEYS,
    LocalCoreset,
    TrainLimits,
    TrainReply,
    decode_train_reply,
    dp_info,
    encode_train_reply,
    public_centres_record,
)
from fedpatch_app.federated.plan import Plan
from fedpatch_app.federated.wire import (
    BANKS,
    CONFIG,
    CORESETS,
    INFO,
    LOCAL_METRICS,
    PHASE_RELEASE,
    PHASE_SCORE,
    PHASE_STATS,
    PUBLIC,
    QUERY_CLIP,
    SCORES,
    STATS_PREFIX,
    InvalidReply,
    array_of,
    decode_array,
    message_bytes,
    record_bytes,
)

__all__ = [
    "BANKS",
    "CONFIG",
    "CORESETS",
    "DP_FLOAT_KEYS",
    "INFO",
    "LOCAL_METRICS",
    "PHASE_RELEASE",
    "PHASE_SCORE",
    "PHASE_STATS",
    "PUBLIC",
    "QUERY_CLIP",
    "SCORES",
    "STATS_PREFIX",
    "CalibrationRange",
    "CategoryScores",
    "InvalidReply",
    "LocalCoreset",
    "Plan",
    "ScoreReply",
    "StatsReply",
    "TrainLimits",
    "TrainReply",
    "array_of",
    "decode_array",
    "decode_banks",
    "decode_score_reply",
    "decode_stats_reply",
    "decode_train_reply",
    "dp_info",
    "encode_banks",
    "encode_score_reply",
    "encode_stats_reply",
    "encode_train_reply",
    "exclusion_config",
    "message_bytes",
    "public_centres_record",
    "query_clips",
    "read_exclusions",
    "read_scalings",
    "record_bytes",
    "scaling_config",
]
