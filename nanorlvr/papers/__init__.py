"""
The three papers nanorlvr implements, and where each of their equations and methods lives. Nothing to run
here: this is the index. Every function listed opens with a comment naming its paper (arXiv id) and
equation; the scripts' flags and subcommands that reach it are in brackets.

Paper 1. "On the Direction of RLVR Updates for LLM Reasoning: Identification and Exploitation",
arXiv 2603.22117. RL changes few tokens, and the signed dlogp = log pi_RL(y) - log pi_base(y) finds them.
    token metrics dlogp, KL_t, entropy H_t      stats.dlogp, stats.token_metrics
    replacement gate (dlogp / KL / entropy / random)  stats.replacement_gate, lockstep.replace_next
    AUC and histogram overlap of the metrics    stats.separability, stats.histogram_overlap
    token replacement, accuracy vs ratio        paper1_direction.replacement_sweep, lockstep.generate_lockstep
                                                [analyze.py dlogp]
    (a) test-time extrapolation                 kernels.dlogp_extrapolation (the reference; Triton kernels
        (1 + gamma) log pi_RL - gamma log pi_base   mix_logprobs / mix_sample), lockstep.generate_lockstep
                                                [sample.py --extrapolate=dlogp]
    (b) training-time reweighting               grpo_loss.token_weights, applied in grpo.grpo_update
        w = 1 + c (1 - pi_old)                      [train.py --reweight=lowprob --reweight_c=c]

Paper 2. "Not All Steps are Informative: On the Linearity of LLMs' RLVR Training" (v3: "Linear Dynamics in
the RLVR Training of Large Language Models"), arXiv 2601.04537. Weights and log-probs move almost linearly
in the step, so one can extrapolate.
    R^2 vs step, sampling and filters           stats.r2_vs_step, stats.n_sample, stats.weight_r2_filter,
                                                stats.logprob_r2_filter
    weight and log-prob linearity of a run      paper2_linearity.weight_linearity, .logprob_linearity
                                                [analyze.py linearity]
    Eq. 1, logits extrapolation                 kernels.logits_extrapolation, lockstep.generate_lockstep
                                                [sample.py --extrapolate=logits]
    Eq. 2, weight extrapolation                 extrapolate.extrapolate_weights,
                                                paper2_linearity.run_extrapolate [analyze.py extrapolate]
    Eq. 3, RL-Extra                             extrapolate.rl_extra_jump, extrapolate.RLExtra (train.py's loop)
                                                [train.py --rl_extra=m,n --rl_extra_optimizer]

Paper 3. AlphaRL: "On Predictability of Reinforcement Learning Dynamics for Large Language Models",
arXiv 2510.00553. The RL update is nearly rank 1, and its rank-1 part grows linearly in the step.
    rank-k model, norm-matched                  extrapolate.rank_k_update, extrapolate.rank_k_state_dict,
                                                paper3_alpharl.run_rank1 [analyze.py rank1]
    AlphaRL prediction from an early window     extrapolate.alpharl_predict, extrapolate.alpharl_state_dict,
                                                paper3_alpharl.run_alpharl [analyze.py alpharl]
    the same question asked by training: a      nanorlvr/lora.py [train.py --lora_rank=1]; the comparison
    rank-1 adapter from the start                and the update's alignment: bench/lora.py

What the analyses share: papers/report.py (plots), evaluate.evaluator (held-out accuracy). The GRPO they
study: grpo.py (the step) and grpo_loss.py (its maths: GRPO, Dr. GRPO and DAPO, each function citing its
paper).
"""
