"""The Markdown report with PNG plots for one or more run folders (`report.write_report`,
`fedpatch report`) and its parts: the runs (`runs`), the head (`overview`), one run's section
(`sections`, `clients`), plots (`plots`, `heatmaps`) and Markdown tables (`markdown`)."""
