"""emolib: emotion vectors in open-weight language models.

Small modules named after the pipeline steps:

- :mod:`emolib.models`   load a model (packaged GGUF, local directory or hub name) as a TransformerBridge
- :mod:`emolib.stimuli`  emotion words, topics, ratings and their validation
- :mod:`emolib.corpus`   stories and neutral dialogues written by the model under study
- :mod:`emolib.extract`  residual-stream activations with token masks, pooling and an on-disk cache
- :mod:`emolib.vectors`  emotion vectors: mean difference, neutral denoising, save/load, scoring
- :mod:`emolib.evaluate` held-out classification, logit lens, intensity probes
- :mod:`emolib.geometry` PCA, correlations with human ratings, bootstrap and permutation nulls, clusters
- :mod:`emolib.results`  metrics.json and glue
- :mod:`emolib.plots`    figure helpers
"""

__version__ = "0.1.0"
