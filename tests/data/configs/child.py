# ruff: noqa: F821  (`_base_` is bound by the config loader)
_base_ = ["./_base_/models/toy.py", "./_base_/schedules/sgd.py", "./_base_/runtime.py"]

model = dict(backbone=dict(depth=50))
heads = _base_.model.num_classes * 2
base_lr = {{_base_.optim_wrapper.optimizer.lr}}
base_epochs = {{_base_.train_cfg.max_epochs}}
optim_wrapper = dict(optimizer=dict(lr=0.02))
train_cfg = dict(max_epochs=24)
param_scheduler = [dict(type="CosineAnnealingLR", T_max=24, by_epoch=True)]
this_file = "{{ fileBasename }}"
