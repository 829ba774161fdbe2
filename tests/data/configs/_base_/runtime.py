work_dir = "./work_dirs/{{ fileBasenameNoExtension }}"
data_root = "{{$FASTOPT_TEST_DATA_ROOT:data/coco/}}"
default_hooks = dict(
    logger=dict(type="LoggerHook", interval=50),
    checkpoint=dict(type="CheckpointHook", interval=1),
)
