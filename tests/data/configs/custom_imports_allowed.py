custom_imports = dict(imports=["fastopt_no_such_module_xyz"], allow_failed_imports=True)
