"""Compiled inference: fold batch norms into convolutions, trace, dump for MegEngine Lite or
export to ONNX, and run the result behind the ``model.inference`` interface.

    dump_inference(model, "fcos.mge")               # lite_export.py; any image and batch size
    detector = LiteDetector("fcos.mge", model.cfg)  # lite_detector.py; .inference -> NumPy
    detections = DetEvaluator(detector).predict(image=data, im_info=im_info)

    export_onnx(model, "fcos.onnx")                 # onnx_export.py; opset 12
    detector = OnnxRuntimeDetector("fcos.onnx", model.cfg)   # onnxruntime_detector.py

``detector.build_detector(config_module, weights, engine, model_path)`` does this for the
tools. Import from the modules: this package's face loads neither MegEngine Lite nor the ONNX
packages.
"""
