// SGD without momentum on the host, as torch.optim.SGD computes it: g += wd * p (decayed slices only), p -= lr * g.
using System.Numerics;

namespace L2L.Training.Optim;

internal sealed unsafe class SgdOptimizer(OptimizerSettings settings, int threads) : HostOptimizerBase(settings, threads), ISliceKernel<SgdOptimizer.Constants>
{
    public override OptimizerKind Kind => OptimizerKind.Sgd;

    public override int StateFloatsPerParam => 0;

    internal readonly struct Constants(float negLearningRate, float weightDecay, bool decay)
    {
        public readonly float NegLearningRate = negLearningRate;
        public readonly float WeightDecay = weightDecay;
        public readonly bool Decay = decay;
    }

    protected override void Update(in Slice slice, int step, float lr, bool decay)
    {
        // Adding a zero decay term could still flip the sign of a zero gradient, so decay-free slices skip it.
        var c = new Constants(-lr, Settings.WeightDecay, decay && Settings.WeightDecay != 0f);
        if (!UseHelpers(slice.Length))
        {
            Run(slice, c, 0, slice.Length);
            return;
        }
        var job = RentJob<Job>();
        job.Slice = slice;
        job.C = c;
        job.RunAndRelease(ChunkCount(slice.Length), Threads);
    }

    internal static void Run(in Slice s, in Constants c, nint start, nint end) => SliceDispatch.Run<SgdOptimizer, Constants>(s, c, start, end);

    /// <inheritdoc/>
    public static void Kernel<TGrad, TCopy>(in Slice s, in Constants c, nint start, nint end) where TGrad : struct, IGradReader where TCopy : struct, ICopyWriter
    {
        // Pointers in locals: a store through one of them could alias the struct, which would force reloads.
        var param = s.Param;
        var half = s.Half;
        var grad = s.Grad;
        var factor = s.GradFactor;
        var i = start;
        var decay = c.Decay;
        if (Vector.IsHardwareAccelerated)
        {
            var w = Vector<float>.Count;
            var factorV = new Vector<float>(factor);
            var negLr = new Vector<float>(c.NegLearningRate);
            var wd = new Vector<float>(c.WeightDecay);
            for (; i <= end - 2 * w; i += 2 * w)
            {
                TGrad.Load(grad, i, factorV, out var g0, out var g1);
                var p0 = Vector.Load(param + i);
                var p1 = Vector.Load(param + i + w);

                if (decay)
                {
                    g0 = g0 + wd * p0;
                    g1 = g1 + wd * p1;
                }
                p0 = p0 + negLr * g0;
                p1 = p1 + negLr * g1;

                p0.Store(param + i);
                p1.Store(param + i + w);
                if (half != null) TCopy.Store(half + i, p0, p1);
            }
        }
        for (; i < end; i++)
        {
            var g = TGrad.Load(grad, i, factor);
            var p = param[i];

            if (decay) g = g + c.WeightDecay * p;
            p = p + c.NegLearningRate * g;

            param[i] = p;
            if (half != null) half[i] = TCopy.Bits(p);
        }
    }

    private sealed class Job : ChunkJob
    {
        public Slice Slice;
        public Constants C;

        protected override void RunChunk(int index)
        {
            var start = (nint)index * ChunkSize;
            Run(Slice, C, start, Math.Min(start + ChunkSize, Slice.Length));
        }
    }
}
