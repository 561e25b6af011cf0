package ai.nasnetedge.demo

import ai.nasnetedge.core.Classification
import ai.nasnetedge.core.FrameProcessor
import ai.nasnetedge.core.Smoother
import android.Manifest
import android.content.pm.PackageManager
import android.os.Bundle
import android.os.SystemClock
import android.view.View
import android.widget.AdapterView
import android.widget.ArrayAdapter
import android.widget.Spinner
import android.widget.TextView
import androidx.activity.result.contract.ActivityResultContracts
import androidx.appcompat.app.AppCompatActivity
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.ImageProxy
import androidx.camera.core.Preview
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.core.content.ContextCompat
import java.util.concurrent.Executors

/**
 * Live classification: CameraX image analysis with STRATEGY_KEEP_ONLY_LATEST (stale frames are dropped,
 * the preview never lags), frame processing in the plain-Kotlin core module, LiteRT or ExecuTorch
 * inference, top-3 labels with smoothing, inference time and FPS, and a runtime/delegate/threads switch.
 *
 * Models: copy `nasnet_mobile_edge_int8.tflite` (from `python -m converters.tflite --int8`, for XNNPACK),
 * `nasnet_mobile_edge_fp32.tflite` (from `python -m converters.tflite --precision fp32`, for the GPU
 * delegate) and `nasnet_mobile_edge_xnnpack_int8.pte` + its `.json` (from
 * `python -m converters.executorch --int8`) into app/src/main/assets/.
 */
class MainActivity : AppCompatActivity() {
    private val analysisExecutor = Executors.newSingleThreadExecutor()
    private var classifier: Classifier? = null
    private var smoother = Smoother(0.6f)
    private var backend = Backend.LITERT_XNNPACK
    private var threads = 4
    private var frames = 0
    private var windowStart = SystemClock.elapsedRealtime()
    private lateinit var results: TextView
    private lateinit var timing: TextView
    // the runtime camera permission, through the Activity Result API (replaces the deprecated
    // requestPermissions / onRequestPermissionsResult pair)
    private val cameraPermission = registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) startCamera() else results.setText(R.string.no_permission)
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        results = findViewById(R.id.results)
        timing = findViewById(R.id.timing)
        setupSwitches()
        if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) {
            startCamera()
        } else {
            cameraPermission.launch(Manifest.permission.CAMERA)
        }
    }

    private fun setupSwitches() {
        val runtime = findViewById<Spinner>(R.id.runtime)
        runtime.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item, Backend.values().map { it.title })
        runtime.onItemSelectedListener = listener { backend = Backend.values()[it]; reload() }
        val threadChoices = listOf(1, 2, 4, 8)
        val threadSpinner = findViewById<Spinner>(R.id.threads)
        threadSpinner.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item, threadChoices.map { "$it threads" })
        threadSpinner.setSelection(2)
        threadSpinner.onItemSelectedListener = listener { threads = threadChoices[it]; reload() }
    }

    /** Swaps the model on the analysis thread: the GPU delegate must be created, used and closed on one thread. */
    private fun reload() = analysisExecutor.execute {
        classifier?.close()
        classifier = null
        classifier = try {
            when (backend) {
                Backend.LITERT_XNNPACK -> LiteRtClassifier(copyAsset(this, "nasnet_mobile_edge_int8.tflite"), threads, false)
                Backend.LITERT_GPU -> LiteRtClassifier(copyAsset(this, "nasnet_mobile_edge_fp32.tflite"), threads, true)
                Backend.EXECUTORCH -> {
                    copyAsset(this, "nasnet_mobile_edge_xnnpack_int8.pte.json")
                    ExecuTorchClassifier(copyAsset(this, "nasnet_mobile_edge_xnnpack_int8.pte"), threads)
                }
            }
        } catch (e: Exception) {
            // a missing asset or a model the runtime rejects: say so instead of crashing the app
            runOnUiThread { results.text = "${backend.title}: ${e.message ?: e.javaClass.simpleName}" }
            null
        }
        smoother = Smoother(0.6f)
    }

    private fun startCamera() {
        val providerFuture = ProcessCameraProvider.getInstance(this)
        providerFuture.addListener({
            val provider = providerFuture.get()
            val preview = Preview.Builder().build().also {
                it.setSurfaceProvider(findViewById<PreviewView>(R.id.preview).surfaceProvider)
            }
            val analysis = ImageAnalysis.Builder()
                .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
                .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_YUV_420_888)
                .build()
            analysis.setAnalyzer(analysisExecutor) { image -> analyze(image) }
            provider.unbindAll()
            provider.bindToLifecycle(this, CameraSelector.DEFAULT_BACK_CAMERA, preview, analysis)
        }, ContextCompat.getMainExecutor(this))
    }

    private fun analyze(image: ImageProxy) {
        image.use {
            val model = classifier ?: return
            val y = it.planes[0]
            val u = it.planes[1]
            val v = it.planes[2]
            val t0 = SystemClock.elapsedRealtimeNanos()
            val input = FrameProcessor.process(
                bytes(y.buffer), bytes(u.buffer), bytes(v.buffer), it.width, it.height, y.rowStride, u.rowStride,
                u.pixelStride, it.imageInfo.rotationDegrees, model.preprocessing
            )
            val t1 = SystemClock.elapsedRealtimeNanos()
            val logits = try {
                model.logits(input)
            } catch (e: Exception) {
                runOnUiThread { results.text = "${model.engine}: ${e.message ?: e.javaClass.simpleName}" }
                return
            }
            val probs = smoother.update(Classification.softmax(logits))
            val t2 = SystemClock.elapsedRealtimeNanos()
            val top = Classification.topK(probs, model.labels, 3)
            frames++
            val now = SystemClock.elapsedRealtime()
            val fps = frames * 1000f / Math.max(1, now - windowStart)
            if (now - windowStart > 2000) { frames = 0; windowStart = now }
            runOnUiThread {
                results.text = top.joinToString("\n") { p -> "%s  %.1f%%".format(p.label, 100 * p.probability) }
                timing.text = "%s, %d threads: inference %.1f ms, preprocessing %.1f ms, %.1f FPS".format(
                    model.engine, threads, (t2 - t1) / 1e6, (t1 - t0) / 1e6, fps)
            }
        }
    }

    private fun bytes(b: java.nio.ByteBuffer): ByteArray {
        b.rewind()
        return ByteArray(b.remaining()).also { b.get(it) }
    }

    private fun listener(onPick: (Int) -> Unit) = object : AdapterView.OnItemSelectedListener {
        override fun onItemSelected(parent: AdapterView<*>?, view: View?, position: Int, id: Long) = onPick(position)
        override fun onNothingSelected(parent: AdapterView<*>?) {}
    }

    override fun onDestroy() {
        super.onDestroy()
        analysisExecutor.execute { classifier?.close() }
        analysisExecutor.shutdown()
    }
}
