model = dict(type="OtherNet")
