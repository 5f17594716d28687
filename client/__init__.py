"""FREE-Fed data-owner side: local training, the Flower ClientApp and the edge runtime."""
