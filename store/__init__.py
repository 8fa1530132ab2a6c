"""PostgreSQL storage (asyncpg): migrations, the learner's projections, and read queries."""
