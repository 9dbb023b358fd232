"""The run report: what a pipeline run did (`reporting.summary`), rendered as Markdown and self-contained HTML
(`reporting.document`) with plots and tables (`reporting.build`). It sits above every stage package and may
import any of them; nothing below imports it."""
