"""The torch-free core: graphs, their YAML form, the paper's conditions (analysis) and recurrent cells."""
