"""Research tools over a finished (or checkpointed) run, each importable and behind
`python -m jaxdl.analysis TOOL --run=WORKDIR [--flags]`:

  adversarial   FGSM / PGD (L-inf, L2; untargeted or targeted): accuracy vs epsilon
  distortions   accuracy under jaxdl's augmentation ops at a sweep of strengths
  saliency      vanilla gradients, SmoothGrad, integrated gradients
  dream         Deep Dream of a layer, activation maximisation of a class logit
  landscape     loss along a line between weights, and on a filter-normalised plane
  neighbours    cosine neighbours of a word in a word2vec run's exported vectors (printed;
                it writes nothing)

Each module holds the compiled math as pure functions of (model function, variables,
inputs), and an `analyse(run, ...)` that takes a `jaxdl.trained.TrainedRun`, checks every
input before writing anything, and writes JSON and PNG into WORKDIR/analysis/TOOL/
(a rerun of a tool replaces its files).

Cost, measured 2026-12-07 on the 2-core CPU dev VM (no GPU, shared, load 5-10), a small
MNIST CNN (conv 16, conv 32, dense 64), 1,000 test or train images: PGD-20 at 5 epsilons
183-274 s per command, FGSM 24-38 s, a 21 x 21 landscape plane 138-228 s, a 21-point line
8-20 s (README: "Looking inside a trained model" has the numbers they gave).
"""
