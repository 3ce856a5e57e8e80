"""BAN, the Bi-Temporal Adapter Network: the model and its registered configs (:mod:`.model`), its bridging
modules and decoders (:mod:`.heads`) and the semantic-change variant for BANDON (:mod:`.scd`)."""

from changekit.models.ban.model import BAN, BitemporalAdapterBranch, BitemporalAdapterHead, ban, build_bitab
from changekit.models.ban.scd import BAN_SCD, ban_scd

__all__ = ["BAN", "BAN_SCD", "BitemporalAdapterBranch", "BitemporalAdapterHead", "ban", "ban_scd", "build_bitab"]
