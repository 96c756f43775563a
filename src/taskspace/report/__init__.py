"""Plots and pictures for run directories."""
