optim_wrapper = dict(optimizer=dict(type="SGD", lr=0.1, betas=(0.9, 0.99)))
