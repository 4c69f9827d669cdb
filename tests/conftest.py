import os

import hypothesis

hypothesis.settings.register_profile("dev", max_examples=20, deadline=None, print_blob=True)
hypothesis.settings.register_profile("ci", max_examples=40, deadline=None, print_blob=True,
                                     derandomize=True, database=None)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
