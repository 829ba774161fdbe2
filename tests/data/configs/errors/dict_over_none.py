_base_ = "../_base_/schedules/sgd.py"
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
