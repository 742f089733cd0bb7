"""napari plugin (``pip install vlseg[napari]``): ask vlseg about a brain MRI inside napari.

The npe2 manifest (``napari.yaml``, entry point ``napari.manifest``) contributes one dock widget,
:class:`~vlseg.napari.widget.VlsegWidget`: open a case (a case folder or DICOM study) or use the
sequences already loaded as image layers named t1n / t1c / t2w / t2f (or t1, t1ce, t2, flair),
type a question, and get the masks as one Labels layer named after the concepts, in the
vocabulary's colours, with the answer text in the widget.
"""
