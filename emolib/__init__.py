"""emolib: emotion vectors in open-weight language models.

Small modules named after the pipeline steps:

- :mod:`emolib.config`      one validated, frozen run configuration per notebook (quick mode applied inside)
- :mod:`emolib.models`      load a model (packaged GGUF, local folder, hub name; optional PEFT adapter)
- :mod:`emolib.chat`        the one chat formatter: templates, the plain Human/Assistant format, answer offsets
- :mod:`emolib.stimuli`     emotion words and topics; :mod:`emolib.prompt_sets` and :mod:`emolib.scenarios`
                            typed prompt and scenario files
- :mod:`emolib.corpus`      stories and neutral dialogues written by the model under study
- :mod:`emolib.generate`    the seeded KV-cache sampler; :mod:`emolib.backends` generation backends
- :mod:`emolib.extract`     residual-stream activations with token masks, pooling and an on-disk cache
- :mod:`emolib.activations` a corpus's story and neutral activations per layer
- :mod:`emolib.vectors`     the emotion-vector recipe, saved and loaded with its settings
- :mod:`emolib.recognition` cross-validated recognition, lexical baseline, reliability
- :mod:`emolib.evaluate`    logit lens, prompt read-outs, chapter 01's corpus report
- :mod:`emolib.geometry`    PCA, ratings correlations, clusters; :mod:`emolib.geometry_report` chapter 02
- :mod:`emolib.ratings`     human valence and arousal ratings joined to the emotion words
- :mod:`emolib.steer`       steering inside a context manager; :mod:`emolib.behaviour` readouts and
                            dose-response; :mod:`emolib.trace` monitoring; :mod:`emolib.sandbox` running
                            model-written code safely
- :mod:`emolib.preferences` Elo preferences and sycophancy under steering
- :mod:`emolib.posttrain`   LoRA post-training; :mod:`emolib.baseline` the emotional baseline it shifts
- :mod:`emolib.stats`       every CI, p-value and null
- :mod:`emolib.results`     metrics.json and glue; :mod:`emolib.report` provenance boxes and results at a glance
- :mod:`emolib.plots`       figure helpers
"""

__version__ = "0.2.0"
