"""The end-to-end job (:mod:`cellcube.run.pipeline`) and the run directory
(:mod:`cellcube.run.rundir`)."""
