"""Model families, one file each. Importing this package registers every named configuration."""
