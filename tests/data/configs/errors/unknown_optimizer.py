optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="FusedAdamWW", lr=0.001))
