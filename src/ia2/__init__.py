"""ia2: ICL Activation Alignment (Mishra, Khashabi, Liu, ICLR 2026).

Five stages, data flowing one way:
task data (`ia2.tasks`, `ia2.episodes`) -> teacher signals (`ia2.teacher`) ->
objectives (`ia2.methods`) -> training (`ia2.methods.trainer`) ->
evaluation and reports (`ia2.evaluate`, `ia2.store`, `ia2.report`).
"""

__version__ = "0.1.0"
