"""Config schemas: one dataclass per config group, registered in Hydra's ConfigStore.

Every option vaitrain accepts is declared here with its type and default; a YAML file in conf/
names its schema in its defaults list, so a misspelt key in YAML or on the command line fails.
"""
from vaitrain.schema.root import register_schemas

__all__ = ["register_schemas"]
