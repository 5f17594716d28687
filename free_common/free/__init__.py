"""FREE (Wei et al., "FREE: Faster and Better Data-Free Meta-Learning", CVPR 2024).

Modules: ``teachers`` (the pool interface), ``augment`` (differentiable augmentation),
``generation`` (the generation loss, Eq. 1, and the recovered-task record shared by every
inversion), ``inversion`` (the meta-generator, FIVE), ``batched_inversion`` (FIVE for all sampled
teachers in one vmapped generator forward), ``scratch_inversion`` (per-model baseline),
``distillation`` (KD), ``meta_learner`` (KD + implicit gradient alignment), ``memory_bank``,
``replay`` (cross-task MAML replay), ``screening`` (one teacher's verdict), ``trust`` (the
measurements and checks screening draws on), ``errors``.
"""
