"""What the network is and how it is emitted.

- :mod:`~edge.model.genotypes`, :mod:`~edge.model.config`: NASNet cells as data, network configurations.
- :mod:`~edge.model.plan`: ``compile(config) -> Plan``, the network as one frozen graph of nodes.
- :mod:`~edge.model.passes`: the lowering, ``Plan -> Plan`` passes ordered into targets (reference, XNNPACK
  fp32, XNNPACK int8, GPU).
- :mod:`~edge.model.torch_emit`, :mod:`~edge.model.keras_emit`: any plan as a PyTorch or Keras network.
- :mod:`~edge.model.weights`, :mod:`~edge.model.sources`: weight files (official Keras HDF5, toolkit ``.pt``)
  and ``weights=`` resolution; :mod:`~edge.model.verify`: the cell-by-cell parity check.
"""
