# The ViT example sharded with FSDP2 (fully_shard) under torchrun.
#
# The iteration-based ViT example with FSDP2: each transformer layer, then the rest of the
# model, is fully sharded over the processes (torch.distributed.fsdp.fully_shard); FusedAdamW
# steps every process's shards in one pass and clips by the norm over all of them.
#
#   torchrun --nproc_per_node 2 --no-python fastopt train vit_adamw_fsdp2 --launcher pytorch
#
# Add mp_policy=dict(param_dtype="bfloat16", reduce_dtype="float32") to compute in bfloat16
# (the sharded params and the optimizer stay float32). Checkpoints hold full state dicts:
# they resume at any world size, and with one process without FSDP2.
_base_ = ["vit_adamw_iters.py"]

model_wrapper_cfg = dict(type="FullyShard", shard_modules=["layers.*"], reshard_after_forward=True)
