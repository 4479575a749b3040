"""Training of the 3DDFA_V2 regressor (needs the ``train`` extra: PyTorch and PyYAML).

Modules: :mod:`.losses` (VDC, WPDC, fWPDC, landmark losses, meta-joint), :mod:`.model`
(MobileNet-V1 with the official module names), :mod:`.samples` (manifests and readers),
:mod:`.augment` (flip, similarity warps, short-video synthesis), :mod:`.dataset` (the PyTorch
dataset), :mod:`.profiling` (face profiling, NumPy/OpenCV only), :mod:`.config`,
:mod:`.trainer`, :mod:`.export`. The commands ``tddfa train`` and ``tddfa data`` are in
:mod:`tddfa.cli.train`.

Importing this package does not import PyTorch; the submodules that need it do.
"""
