_base_ = "./child.py"

optim_wrapper = dict(_delete_=True, type="OptimWrapper", optimizer=dict(type="AdamW", lr=0.001))
model = dict(backbone=dict(norm_cfg=dict(_delete_=True, type="GN", num_groups=32)))
new_section = dict(_delete_=True, a=1)
