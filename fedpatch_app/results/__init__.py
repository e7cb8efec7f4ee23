"""What a run writes and how it is read back: the results schema and files (`schema`), the
anomaly maps in the official evaluator's format (`official_maps`), and what a run used, read
from results files of any age (`run_facts`)."""
