// SGD and AdamW run on the device for layers whose weights stay on the device all step.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.Model;
using L2L.Training.Optim;

namespace L2L.Training.Update;

/// <summary>
/// The optimizer for layers whose FP32 weights live on the device: every layer in the conventional
/// executor, and the embedding and head in the relay executor (which keeps them resident for the
/// whole step anyway). Updating those on the device removes the step-boundary bubble a host update
/// of the embedding would cause — its gradient is the last one to complete, and the next step starts
/// with it — and saves its gradient and weight round trip over the bus. The update rule is the one
/// the conventional executor has always used (PyTorch semantics, per tensor, decay by the layout's
/// rule), so the two executors update these layers identically.
/// </summary>
public sealed class DeviceLayerOptimizer : IDisposable
{
    private readonly OptimizerOps _ops;
    private readonly OptimizerSettings _settings;
    private readonly LearningRateSchedule _schedule;
    private readonly ResourceList _owned = new();
    private readonly Dictionary<int, (DeviceBuffer<float> M, DeviceBuffer<float> V)> _moments = new();

    /// <summary>
    /// Allocates the optimizer state of <paramref name="layers"/> (m and v for AdamW, nothing for SGD),
    /// zeroed or taken from <paramref name="resume"/> (whose per-layer state uses the host layout).
    /// </summary>
    /// <exception cref="NotSupportedException">The optimizer has no device kernel (LAMB).</exception>
    public DeviceLayerOptimizer(Backend backend, OptimizerSettings settings, LearningRateSchedule schedule,
        IEnumerable<LayerLayout> layers, TrainingState? resume = null)
    {
        if (!Supports(settings.Kind))
            throw new NotSupportedException($"The device optimizer runs SGD and AdamW; {EagerParamServer.OptimizerName(settings.Kind)} runs on the host.");
        _ops = backend.Get<OptimizerOps>();
        _settings = settings;
        _schedule = schedule;
        if (settings.Kind != OptimizerKind.AdamW)
            return;
        try
        {
            var s = backend.ComputeStream;
            foreach (var layer in layers)
            {
                var specs = Describe(settings.Kind, [layer]);
                var m = _owned.Add(backend.Allocate<float>(specs.Named(layer.Name + ".m")));
                var v = _owned.Add(backend.Allocate<float>(specs.Named(layer.Name + ".v")));
                if (resume is null)
                {
                    m.View.MemSetToZero(s);
                    v.View.MemSetToZero(s);
                }
                else
                {
                    var (hm, hv) = OptimizerStateLayout.Split(layer, resume.LayerStates[layer.Index]);
                    m.View.CopyFromCPU(s, hm);
                    v.View.CopyFromCPU(s, hv);
                }
                _moments[layer.Index] = (m, v);
            }
            s.Synchronize();
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The device buffers the optimizer state of <paramref name="layers"/> takes, in allocation order: m and v per layer for AdamW, none for SGD.</summary>
    public static IReadOnlyList<BufferSpec> Describe(OptimizerKind kind, IEnumerable<LayerLayout> layers) =>
        kind != OptimizerKind.AdamW ? []
            : layers.SelectMany(l => new BufferSpec[] { new(l.Name + ".m", MemoryCategory.Optimizer, l.Length), new(l.Name + ".v", MemoryCategory.Optimizer, l.Length) }).ToArray();

    /// <summary>Whether <paramref name="kind"/> has a device kernel.</summary>
    public static bool Supports(OptimizerKind kind) => kind is OptimizerKind.Sgd or OptimizerKind.AdamW;

    /// <summary>
    /// Enqueues one step (0-based <paramref name="step"/>) of <paramref name="layer"/> on stream <paramref name="s"/>, with
    /// AdamW's 1-based step count <paramref name="optimizerStep"/> (default <c>step + 1</c>; less after skipped steps).
    /// </summary>
    public void Step(AcceleratorStream s, LayerLayout layer, ArrayView<float> parameters, ArrayView<float> grads, long step, long? optimizerStep = null) =>
        Step<float>(s, layer, parameters, grads, default, step, optimizerStep);

    /// <summary>
    /// As <see cref="Step(AcceleratorStream, LayerLayout, ArrayView{float}, ArrayView{float}, long, long?)"/> on the FP32
    /// master <paramref name="parameters"/>, writing the updated weights rounded to <typeparamref name="T"/> (Bf16 or Half)
    /// into <paramref name="copy"/> in the same pass: the 16-bit working copy the layers read.
    /// </summary>
    public void Step<T>(AcceleratorStream s, LayerLayout layer, ArrayView<float> parameters, ArrayView<float> grads, ArrayView<T> copy,
        long step, long? optimizerStep = null) where T : unmanaged
    {
        var withCopy = typeof(T) != typeof(float);
        var lr = _schedule.At(step);
        var t = optimizerStep ?? step + 1;
        var bc1 = (float)(1 - Math.Pow(_settings.Beta1, t));
        var bc2 = (float)(1 - Math.Pow(_settings.Beta2, t));
        var p = new Model.Device.LayerViews<float>(layer, parameters);
        var g = new Model.Device.LayerViews<float>(layer, grads);
        foreach (var slot in layer.Tensors)
        {
            var wd = slot.Decay ? _settings.WeightDecay : 0f;
            if (_settings.Kind == OptimizerKind.AdamW)
            {
                var (mb, vb) = _moments[layer.Index];
                var m = new Model.Device.LayerViews<float>(layer, mb.View);
                var v = new Model.Device.LayerViews<float>(layer, vb.View);
                var (pw, gw, mw, vw, rate) = (p[slot.LocalName], g[slot.LocalName], m[slot.LocalName], v[slot.LocalName], lr * slot.LearningRateScale);
                if (!withCopy)
                    _ops.AdamW(s, pw, gw, mw, vw, rate, _settings.Beta1, _settings.Beta2, _settings.Epsilon, wd, bc1, bc2);
                else
                    _ops.AdamW(s, pw, gw, mw, vw, copy.SubView(slot.Offset, slot.Length), rate, _settings.Beta1, _settings.Beta2, _settings.Epsilon, wd, bc1, bc2);
            }
            else
            {
                var (pw, gw, rate) = (p[slot.LocalName], g[slot.LocalName], lr * slot.LearningRateScale);
                if (!withCopy)
                    _ops.Sgd(s, pw, gw, rate, wd);
                else
                    _ops.Sgd(s, pw, gw, copy.SubView(slot.Offset, slot.Length), rate, wd);
            }
        }
    }

    /// <summary>Floats of optimizer state per parameter (2 for AdamW, 0 for SGD), as checkpoints record it.</summary>
    public int StateFloatsPerParam => _settings.Kind == OptimizerKind.AdamW ? 2 : 0;

    /// <summary>The state of <paramref name="layer"/> in the host layout, for a checkpoint (synchronizes <paramref name="s"/>).</summary>
    public float[] State(AcceleratorStream s, LayerLayout layer)
    {
        if (_settings.Kind != OptimizerKind.AdamW)
            return [];
        var (mb, vb) = _moments[layer.Index];
        var m = new float[layer.Length];
        var v = new float[layer.Length];
        mb.View.CopyToCPU(s, m);
        vb.View.CopyToCPU(s, v);
        s.Synchronize();
        return OptimizerStateLayout.Join(layer, m, v);
    }

    /// <inheritdoc/>
    public void Dispose() => _owned.Dispose();
}
