"""DSQNet: the model and its named configs (:mod:`.model`); the released head (:mod:`.head`, May 2024), the August
2024 upload (:mod:`.head_2408`), changekit's design (:mod:`.head_cx`) and the blocks they share (:mod:`.blocks`)."""

from changekit.models.dsqnet.model import (
    DSQNet,
    dsqnet_2408_swin_t,
    dsqnet_2408_vitaev2_s,
    dsqnet_cx_swin_t,
    dsqnet_cx_vitaev2_s,
    dsqnet_swin_t,
    dsqnet_vitaev2_s,
)

__all__ = ["DSQNet", "dsqnet_swin_t", "dsqnet_vitaev2_s", "dsqnet_2408_swin_t", "dsqnet_2408_vitaev2_s",
           "dsqnet_cx_swin_t", "dsqnet_cx_vitaev2_s"]
