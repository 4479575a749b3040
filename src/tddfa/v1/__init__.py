"""3DDFA V1 ("Face Alignment in Full Pose Range: A 3D Total Solution", TPAMI): the released V1
regressor, quaternion pose, PNCC / PAF features, OWPDC and the two-stream cascade.

Modules: :mod:`~tddfa.v1.released` (the ``v1-wpdc-vdc`` checkpoint → ONNX), :mod:`~tddfa.v1.quaternion`,
:mod:`~tddfa.v1.features` (PNCC, PAF), :mod:`~tddfa.v1.cascade` (ONNX inference), and with the
``train`` extra :mod:`~tddfa.v1.net`, :mod:`~tddfa.v1.owpdc`, :mod:`~tddfa.v1.cascade_train`.
Nothing here imports PyTorch at module level except the training modules.
"""
