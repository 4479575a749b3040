"""Training of the 3DDFA_V2 regressor (needs the ``train`` extra: PyTorch and PyYAML).

Modules: :mod:`.losses` (VDC, WPDC, fWPDC, landmark losses, meta-joint), :mod:`.model`
(MobileNet-V1 with the official module names), :mod:`.data` (readers, augmentation, flip),
:mod:`.profiling` (face profiling, NumPy/OpenCV only), :mod:`.trainer`, :mod:`.export`,
:mod:`.cli` (``tddfa train`` and ``tddfa data``).

Importing this package does not import PyTorch; the submodules that need it do.
"""
