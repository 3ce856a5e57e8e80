"""DSQNet: the model and its registered configs (:mod:`.model`) and its head, DSP + BMQ (:mod:`.heads`)."""

from changekit.models.dsqnet.model import DSQNet, dsqnet_swin_t, dsqnet_vitaev2_s

__all__ = ["DSQNet", "dsqnet_swin_t", "dsqnet_vitaev2_s"]
