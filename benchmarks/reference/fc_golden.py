"""Golden outputs of open-cd's FC-EF and FC-Siam-conc (``opencd/models/backbones/fcsn.py``) for
``tests/fixtures/golden/{fc_ef,fc_siam_conc}_64.npz``.

The backbone file needs nothing of mm* but its registry decorator, so it runs in .venv: export open-cd
(likyoo/open-cd) to ``$OPENCD`` and run ``OPENCD=$OPENCD .venv/bin/python benchmarks/reference/fc_golden.py``.
The head is mmseg's ``FCNHead(num_convs=0, concat_input=False)`` as the configs build it (eval: Dropout2d is the
identity, then the 1x1 ``conv_seg``). Weights by the golden weight rule, inputs from the rule's generator
(``tests/fixtures/golden/README.md``), 64x64, eval mode, float32.
"""
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from helpers.golden import rule_tensor  # noqa: E402

registry = types.ModuleType("opencd.registry")
registry.MODELS = types.SimpleNamespace(register_module=lambda *a, **k: (lambda cls: cls))
sys.modules.update({"opencd": types.ModuleType("opencd"), "opencd.registry": registry})
spec = importlib.util.spec_from_file_location("fcsn", Path(os.environ["OPENCD"]) / "opencd/models/backbones/fcsn.py")
fcsn = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fcsn)

SEED, SIZE = 0, 64
for name, cls, cin, config in (("fc_ef", fcsn.FC_EF, 6, "fc_ef_256x256_40k_levircd"),
                               ("fc_siam_conc", fcsn.FC_Siam_conc, 3, "fc_siam_conc_256x256_40k_levircd")):
    backbone = cls(in_channels=cin).eval()
    keys = [[f"backbone.{k}", list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in backbone.state_dict().items()]
    keys += [["decode_head.conv_seg.weight", [2, 16, 1, 1], "float32"], ["decode_head.conv_seg.bias", [2], "float32"]]
    sd = {k: rule_tensor(k, s, d, SEED) for k, s, d in keys}
    backbone.load_state_dict({k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")})
    g = torch.Generator().manual_seed(SEED)
    t1, t2 = torch.randn(1, 3, SIZE, SIZE, generator=g), torch.randn(1, 3, SIZE, SIZE, generator=g)
    with torch.no_grad():
        feats = backbone(t1, t2)
        feats = feats[-1] if isinstance(feats, (tuple, list)) else feats
        logits = F.conv2d(feats, sd["decode_head.conv_seg.weight"], sd["decode_head.conv_seg.bias"])
    out = ROOT / "tests/fixtures/golden" / f"{name}_{SIZE}.npz"
    np.savez_compressed(out, config=config, seed=SEED, keys=json.dumps(keys), t1=t1.numpy(), t2=t2.numpy(),
                        logits=logits.numpy(), logits_full=logits.numpy())
    print(out, tuple(logits.shape), sum(v.numel() for v in sd.values() if v.is_floating_point()))
