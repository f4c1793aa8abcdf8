"""The run layer: training, evaluation and promotion of every model family as plain functions.

The Dagster assets (``assets/``), the ``emoflow`` command line (``runs.commands``) and the DVC stages all call
these functions; none of them starts a Dagster run to train. Inputs: a ``RunContext`` (the settings, emoflow's
home, MLflow tracking, progress), a ``DatasetRef`` (a shard set or MNIST, with its version) and a variant;
outputs: ``TrainOutcome`` / ``EvalOutcome`` dataclasses.

Modules: ``context`` (RunContext), ``datasets`` (DatasetRef), ``tracking`` (MLflow: runs, models, datasets,
the registry), ``registry`` (registered names, candidate/champion promotion), ``outcomes`` (the dataclasses),
``families`` (which family trains which variant), one module per family (``flows``, ...), ``commands`` (the CLI).

Adding a model family: its pure-PyTorch package (model, a ``training.loop.Trainer``, evaluation), one module
here with ``train_<family>`` / ``evaluate_<family>`` (and a ``Family`` entry in ``runs.families``), and its
assets come from ``assets.model_assets`` (see the README's Development section).
"""
