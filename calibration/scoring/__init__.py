"""What a cut costs and which channels or bases go first: cut scores, Taylor, Dagger, refit order, data-fitted bases."""
