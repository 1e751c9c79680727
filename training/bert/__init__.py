"""The bert workload: BERT-family text classification under Ray Train's TorchTrainer."""
