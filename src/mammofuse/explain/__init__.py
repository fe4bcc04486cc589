"""Grad-CAM per view for the two-view + clinical model, drawn on the preprocessed and original images."""

CASCADE_BREASTS = 16  # held-out breasts per model whose maps go through the cascading randomisation
CASCADE_DRAWS = 5  # draws of the random weights the cascade goes through: one draw's verdict is luck
