custom_imports = dict(imports=["fastopt_test_custom_mod"], allow_failed_imports=False)
fn = dict(type="fastopt_test_custom_function", x=4)
